#!/usr/bin/env bash
# Host discovery for elastic Horovod from a hosts file: horovodrun runs this every few seconds and takes
# what it prints, one "host:slots" per line, as the hosts available now. Edit the file to add or remove a
# host mid-run (a removed host's workers are stopped; an added one joins at the next epoch end).
#
#   HVDW_HOSTS_FILE=hosts.txt horovodrun -np 2 --min-np 1 --max-np 4 \
#       --host-discovery-script jobs/lib/discover_hosts_file.sh hvdweather-train --elastic ...
#
# The file: one host per line, "host" or "host:slots" (default 1 slot); blank lines and # comments are
# skipped. A missing file is an error (horovodrun then stops the job) rather than "no hosts".
set -euo pipefail
file=${HVDW_HOSTS_FILE:-hosts.txt}
[[ -r $file ]] || { echo "discover_hosts_file.sh: error: HVDW_HOSTS_FILE=$file is not a readable file" >&2; exit 2; }
while IFS= read -r line || [[ -n $line ]]; do
  line=${line%%#*}
  line=${line//[[:space:]]/}
  [[ -z $line ]] && continue
  [[ $line == *:* ]] || line=$line:1
  echo "$line"
done < "$file"

"""Test machinery for runs beyond one machine: network-namespace hosts (`netns`) on this one."""

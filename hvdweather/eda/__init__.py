"""The CPU EDA and preprocessing stage: per-class colour histograms and image statistics, and the
offline conversion of a class-folder data set into sharded TFRecords.

    hvdweather-eda DATA --out DIR --executor sequential|multiprocessing|mpi [--processes N]
    mpirun -np 4 hvdweather-eda DATA --out DIR --executor mpi
    hvdweather-prepare DATA --out DIR --image-size 256 --executor multiprocessing --processes 2

Modules: `kernel` (the per-image work), `executors` (how chunks of images are spread over processes
and combined), `analyse` (the EDA stage), `prepare` (the TFRecord stage), `outputs` and `plots`.
Nothing here imports TensorFlow except the prepare workers, so the EDA starts in a fraction of a second.
"""

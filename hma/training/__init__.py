"""The training layer every trainer shares: tokenizers, the world model and policies.

    run.py          RunConfig (name, storage, budget, workers), TrainState, the Ray Train skeleton
                    (fit on the driver; WorkerContext, Clock, report on the workers)
    optim.py        OptimConfig, AdamW with decay groups, warm-up + cosine schedule, clip + step
    progress.py     worker -> driver progress records: console lines and TensorBoard
    distributed.py  is_distributed, world_size, agree (stop together), unwrap (DDP)

A trainer keeps only what is its own: its config sections, its state, its step function and its
checkpoint contents.
"""

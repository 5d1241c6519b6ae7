"""Training: the model, losses, metrics, LR schedules, regularisers, optimizers, augmentation, the loop and the job wrapper."""

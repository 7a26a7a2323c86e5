"""Training utilities for multitask fine-tuning: PCGrad, task schedules, optimizer groups, freezing."""

"""The multitask recipe: the task table, building a run, its options, splits and pair losses."""

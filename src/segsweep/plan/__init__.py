"""Planning: config loading and validation, study expansion into content-addressed cells, job resources.

The composition root: it may import every stage (to validate a config against their registries); no stage imports it."""

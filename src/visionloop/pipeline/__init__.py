"""Running the loop's stages: the stage registry (`stages`), a stage run the way `dvc repro`
would run it (`reproduce`), and the run's reports for people (`reports`)."""

"""Where `clipforge train` puts its run with the default options, so that the other commands find
the main model without being told."""

DEFAULT_RUN_DIR = "runs/default"
DEFAULT_MODEL_DIR = f"{DEFAULT_RUN_DIR}/model"

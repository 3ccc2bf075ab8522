"""DrakeGPT's one entry point: `python run.py [group=option ...] [key=value ...]`, or `-m` to sweep."""

import sys

import hydra
from omegaconf import DictConfig

from drakegpt.overrides import unknown_key
from drakegpt.schema import RunConfig, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from drakegpt.tasks import run_job  # torch loads here, not when a config is only composed (--help, --cfg)

    return run_job(cfg)


if __name__ == "__main__":
    typo = unknown_key(sys.argv[1:], RunConfig)  # before Hydra, whose hint for a typo is to add it with '+'
    if typo:
        sys.exit(print(f"error: {typo}", file=sys.stderr) or 2)
    try:
        main()
    except KeyboardInterrupt:  # before the task's own handling began (Hydra starting, torch importing)
        sys.exit(print("stopped before training started; nothing to resume", file=sys.stderr) or 130)

"""DrakeGPT's one entry point: `python run.py [group=option ...] [key=value ...]`, or `-m` to sweep."""

import hydra
from omegaconf import DictConfig

from drakegpt.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from drakegpt.tasks import run_job  # torch loads here, not when a config is only composed (--help, --cfg)

    return run_job(cfg)


if __name__ == "__main__":
    main()

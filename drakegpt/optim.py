"""The optimizer and its learning-rate schedule, built from conf/optimizer/*.yaml with hydra.utils.instantiate.

`optimizer.algorithm` is a partial that takes the model's parameter groups (the attention and feed-forward
matrices, and everything else: torch's optimizers treat both alike), `optimizer.schedule` one that takes
the optimizer; both are stepped once per training iteration. A new optimizer is a new YAML file.
"""

import logging
import math
from typing import Any, Dict, List

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from drakegpt.errors import UsageError
from drakegpt.schema import OptimizerConfig

log = logging.getLogger(__name__)

ParamGroups = List[Dict[str, Any]]
PROBE_STEPS = 3


def parameter_groups(model: torch.nn.Module) -> ParamGroups:
    """[everything else, the matrices of the attention and feed-forward layers], the second marked `matrices`."""
    matrices, others = [], []
    for name, parameter in model.named_parameters():
        (matrices if name.startswith("blocks.") and parameter.dim() == 3 else others).append(parameter)
    return [{"params": others}, {"params": matrices, "matrices": True}]


def build_optimizer(groups: ParamGroups, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return _call("optimizer.algorithm", cfg.algorithm, [g for g in groups if g["params"]])


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig) -> LRScheduler:
    return _call("optimizer.schedule", cfg.schedule, optimizer)


FLAGS = ("fused", "foreach", "nesterov", "amsgrad", "maximize", "capturable", "differentiable")


def check(cfg: OptimizerConfig) -> None:
    """Build both on stand-in parameters and step them a few times, as training will, so that a bad value, an
    optimizer that needs a closure or a schedule that needs a metric fails in one line before any real work."""
    algorithm = cfg.algorithm or {}
    if "lr" in algorithm and algorithm["lr"] not in (cfg.base_lr, cfg.max_lr):
        raise UsageError(f"optimizer.algorithm.lr={algorithm['lr']} would be overwritten by the schedule; set "
                         f"optimizer.base_lr and optimizer.max_lr instead")
    for key, value in algorithm.items():
        if key in FLAGS and not isinstance(value, bool) and value is not None:
            raise UsageError(f"optimizer.algorithm.{key}={value} must be true or false")
        if key.endswith("momentum") and isinstance(value, (int, float)) and not 0 <= value < 1:
            raise UsageError(f"optimizer.algorithm.{key}={value} must be in [0, 1), e.g. 0.95")
        if key.endswith("lr_factor") and isinstance(value, (int, float)) and not value > 0:
            raise UsageError(f"optimizer.algorithm.{key}={value} must be above 0 (it multiplies the schedule's rate)")
    betas = algorithm.get("betas")
    if betas is not None and (not isinstance(betas, (list, tuple)) or len(betas) != 2):
        raise UsageError(f"optimizer.algorithm.betas={list(betas) if isinstance(betas, (list, tuple)) else betas} "
                         f"must be two numbers in [0, 1), e.g. [0.9,0.95]")
    for key, value in _numbers(cfg.schedule):
        if value < 0 or (value == 0 and _is_length(key)):
            raise UsageError(f"optimizer.schedule.{key}={value} must be {'positive' if _is_length(key) else '>= 0'}; "
                             f"fix the value in optimizer.schedule")
    stand_in = [{"params": [torch.nn.Parameter(torch.ones(4))]},
                {"params": [torch.nn.Parameter(torch.ones(1, 2, 2))], "matrices": True}]
    optimizer = build_optimizer(stand_in, cfg)
    schedule = build_schedule(optimizer, cfg)
    for key, target, step in (("optimizer.algorithm", cfg.algorithm, optimizer.step),
                              ("optimizer.schedule", cfg.schedule, schedule.step)):
        try:
            for _ in range(PROBE_STEPS):
                for p in (p for group in stand_in for p in group["params"]):
                    p.grad = torch.ones_like(p)
                step()
        except (TypeError, ValueError, RuntimeError, ArithmeticError) as e:
            raise UsageError(
                f"{key} ({target.get('_target_')}) cannot be stepped once per iteration without arguments, as "
                f"training does ({_first_line(e)}); choose another in {key}"
            ) from None
    rates = schedule.get_last_lr()
    if not all(math.isfinite(r) and r >= 0 for r in rates):
        raise UsageError(f"optimizer.schedule gives the learning rate {rates}; fix the values in optimizer.schedule")


def _numbers(node) -> List:
    return [(k, v) for k, v in (node or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("_")]


def _is_length(key: str) -> bool:
    """A schedule argument counted in iterations, other than a warm-up: zero would divide by zero."""
    return ("step_size" in key or "iters" in key or key in ("T_max", "T_0")) and "warmup" not in key


def _call(key: str, node, argument):
    try:
        return instantiate(node, _convert_="all")(argument)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise UsageError(f"{key} ({node.get('_target_')}): {_first_line(cause)}; fix the value in {key}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{key} ({node.get('_target_')}): {_first_line(e)}; fix the value in {key}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_iters: int, total_iters: int, base_lr: float, max_lr: float
) -> LambdaLR:
    """Linear warm-up to max_lr (the optimizer's lr), then a half cosine down to base_lr at the last iteration.

    A warm-up longer than half the run is shortened to half of it, so that a short run still decays.
    """
    warmup = min(warmup_iters, total_iters // 2)
    if warmup < warmup_iters:
        log.info("optimizer warm-up shortened from %d to %d iterations: half of train.iters", warmup_iters, warmup)
    floor = base_lr / max_lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_iters - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


class ReplicatedMuon(torch.optim.Muon):
    """torch.optim.Muon for (replicas, out, in) weights: each replica's matrix is orthogonalised on its own."""

    def __init__(self, params, **settings):
        defaults = torch.optim.Muon([torch.zeros(1, 1, requires_grad=True)], **settings).defaults  # validated
        torch.optim.Optimizer.__init__(self, params, defaults)  # Muon's own check would refuse the replica dimension

    def _init_group(self, group, params_with_grad, grads, muon_momentum_bufs) -> bool:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            for r in range(p.shape[0]):  # views: Muon's in-place updates land in the parameter and its buffer
                params_with_grad.append(p[r])
                grads.append(p.grad[r])
                muon_momentum_bufs.append(state["momentum_buffer"][r])
        return False


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the attention and feed-forward matrices, AdamW for the rest (embeddings, norms, biases, LM head),
    as modded-nanogpt splits them. Param group 0 is AdamW's, group 1 Muon's: a schedule given a list of two
    rates sets each its own."""

    def __init__(self, params: ParamGroups, lr: float, muon_lr_factor: float, betas, weight_decay: float,
                 muon_momentum: float):
        groups = list(params)
        matrices = [p for g in groups if g.get("matrices") for p in g["params"]]
        others = [p for g in groups if not g.get("matrices") for p in g["params"]]
        if not matrices:
            raise ValueError("Muon has no attention or feed-forward matrices to act on in this model; use adamw_cyclic")
        self.adamw = torch.optim.AdamW(others, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.muon = ReplicatedMuon(matrices, lr=lr * muon_lr_factor, momentum=muon_momentum, weight_decay=weight_decay)
        super().__init__([{"params": others}, {"params": matrices}], {"lr": lr})
        self.param_groups = self.adamw.param_groups + self.muon.param_groups  # one set of dicts: schedules reach both

    @torch.no_grad()
    def step(self, closure=None):
        self.adamw.step()
        self.muon.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none)
        self.muon.zero_grad(set_to_none)

    def state_dict(self) -> Dict[str, Any]:
        """One dict as torch writes it: AdamW's parameters numbered first, then Muon's."""
        a, m = self.adamw.state_dict(), self.muon.state_dict()
        shift = len(self.adamw.param_groups[0]["params"])
        return {
            "state": {**a["state"], **{i + shift: s for i, s in m["state"].items()}},
            "param_groups": a["param_groups"] + [{**g, "params": [i + shift for i in g["params"]]}
                                                 for g in m["param_groups"]],
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        shift = len(self.adamw.param_groups[0]["params"])
        adam_group, muon_group = state_dict["param_groups"]
        self.adamw.load_state_dict({"state": {i: s for i, s in state_dict["state"].items() if i < shift},
                                    "param_groups": [adam_group]})
        muon_group = {**muon_group, "params": [i - shift for i in muon_group["params"]]}
        self.muon.load_state_dict({"state": {i - shift: s for i, s in state_dict["state"].items() if i >= shift},
                                   "param_groups": [muon_group]})
        self.param_groups = self.adamw.param_groups + self.muon.param_groups

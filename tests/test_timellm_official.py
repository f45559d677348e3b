"""`hybrid-forecast timellm` trains with the learning rates official run_main.py uses."""

from __future__ import annotations

import pytest
import torch

from timellm.member import TimeLLMForecaster
from timellm.official_args import parse_official
from timellm.trainer import official_epoch_lr

BASE = ["--task_name", "long_term_forecast", "--llm_model", "BERT"]


def official_rates(lradj: str, lr: float, epochs: int, steps: int = 3) -> list[float]:
    """Per-epoch rates of a re-enactment of run_main.py's schedule handling with torch's
    own schedulers: OneCycleLR built for all but COS (type1 and constant never step it;
    after epoch 0 the current rate becomes the base that type1 halves each epoch), COS a
    CosineAnnealingLR(T_max=20, eta_min=1e-8) stepped after each epoch."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler
    if lradj == "COS":
        scheduler = sched.CosineAnnealingLR(opt, T_max=20, eta_min=1e-8)
    else:
        scheduler = sched.OneCycleLR(
            opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps, pct_start=0.2
        )
    base = lr
    rates = []
    for epoch in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        for _ in range(steps):
            opt.step()
        if lradj == "COS":
            scheduler.step()
            continue
        if epoch == 0:
            base = opt.param_groups[0]["lr"]
        # the rate for epoch + 1 (1-based "epoch + 1" in the official helper)
        opt.param_groups[0]["lr"] = base * 0.5**epoch if lradj == "type1" else base
    return rates


@pytest.mark.parametrize(
    "lradj,schedule",
    [("type1", "official_type1"), ("COS", "official_cos"), ("constant", "official_constant")],
)
def test_official_epoch_rates_match_a_reenactment(lradj: str, schedule: str) -> None:
    for lr in (0.01, 1e-4):
        ours = [official_epoch_lr(schedule, lr, e) for e in range(25)]  # past COS's T_max
        assert ours == pytest.approx(official_rates(lradj, lr, 25), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    "flags,schedule",
    [
        ([], "official_type1"),  # the official default, and the ETTh1 script's
        (["--lradj", "type1"], "official_type1"),
        (["--lradj", "COS"], "official_cos"),
        (["--lradj", "constant"], "official_constant"),
        (["--lradj", "TST"], "onecycle"),
    ],
)
def test_lradj_maps_to_the_official_rates(flags: list[str], schedule: str) -> None:
    m = parse_official(BASE + ["--learning_rate", "0.01", *flags])
    params = m.config["member_params"]["timellm"]
    assert params["schedule"] == schedule and params["lr"] == 0.01
    cfg = TimeLLMForecaster(**params).train_config()
    assert (cfg.schedule, cfg.lr) == (schedule, 0.01)


def test_pct_start_reaches_the_trainer() -> None:
    m = parse_official(BASE + ["--lradj", "TST", "--pct_start", "0.3"])
    params = m.config["member_params"]["timellm"]
    assert params["pct_start"] == 0.3
    assert not any(s.startswith("--pct_start") for s in m.ignored)
    assert TimeLLMForecaster(**params).train_config().pct_start == 0.3
    # Left out, it is the official default; with another --lradj it means nothing there.
    assert parse_official(BASE).config["member_params"]["timellm"]["pct_start"] == 0.2
    typ1 = parse_official(BASE + ["--pct_start", "0.3"])
    assert any(s.startswith("--pct_start") for s in typ1.ignored)

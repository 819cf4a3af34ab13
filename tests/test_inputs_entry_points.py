"""Bad and edge inputs at the remaining public entry points: artifact loading
(``load_ardm``, ``load_controller``) and ``benchmark`` (issue 14).

Each property breaks one input and asserts a ``ValueError`` / ``TypeError`` (for a missing
file ``FileNotFoundError``) whose message names what was broken: the card's key or the
artifact's file, or the benchmark's argument.  Every benchmark case is refused before a
cell runs, so the suite stays fast; the valid path is covered by tests/test_bench.py.
Generated cases: ``CASES`` (printed by ``test_the_number_of_generated_cases``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ardm_infer import load_ardm
from ardm_infer.ardm.pretrained import CHECKPOINT_DIR
from ardm_infer.bench import benchmark
from ardm_infer.controller import load_controller

EXAMPLES = {"card": 30, "name": 20, "benchmark": 40}
CASES = sum(EXAMPLES.values())
SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


def _leaves(card: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in card.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


def _edit(card: dict, path: tuple, how: str) -> dict:
    card = json.loads(json.dumps(card))
    parent = card
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    value = parent[last]
    if how == "delete":
        del parent[last]
    elif how == "retype":
        parent[last] = ["not", "this"] if isinstance(value, str) else "not this"
    else:  # "change": a plausible value of the same kind
        if isinstance(value, bool):
            parent[last] = not value
        elif isinstance(value, int | float):
            parent[last] = value * 2 + 1
        elif isinstance(value, str):
            parent[last] = value + "x"
        elif isinstance(value, list):
            parent[last] = [*value, value[-1] if value else 0]
        else:
            parent[last] = 0
    return card


@pytest.fixture(scope="module")
def artifact_copies(tmp_path_factory):
    out = {}
    for name in ("ardm-ks", "controller-ks"):
        folder = tmp_path_factory.mktemp(name)
        for suffix in (".safetensors", ".json"):
            shutil.copy(CHECKPOINT_DIR / f"{name}{suffix}", folder / f"{name}{suffix}")
        out[name] = folder / f"{name}.safetensors"
    return out


@settings(max_examples=EXAMPLES["card"], **SETTINGS)
@given(data=st.data(), which=st.sampled_from(["ardm-ks", "controller-ks"]))
def test_an_edited_card_is_refused_with_its_key_or_file(artifact_copies, data, which):
    weights = artifact_copies[which]
    card_path = weights.with_suffix(".json")
    original = card_path.read_text()
    card = json.loads(original)
    path = data.draw(st.sampled_from(sorted(_leaves(card))), label="key")
    how = data.draw(st.sampled_from(["delete", "retype", "change"]), label="edit")
    card_path.write_text(json.dumps(_edit(card, path, how), indent=2))
    try:
        loader = load_ardm if which == "ardm-ks" else load_controller
        with pytest.raises(ValueError) as caught:
            loader(str(weights))
        message = str(caught.value)
        assert path[-1] in message or weights.name in message or card_path.name in message
    finally:
        card_path.write_text(original)


@settings(max_examples=EXAMPLES["name"], **SETTINGS)
@given(
    name=st.one_of(
        st.text(min_size=1, max_size=12).filter(lambda s: s not in ("ks", "kolmogorov")),
        st.integers(),
        st.none(),
        st.sampled_from(["ks.pt", "/nonexistent/ardm.safetensors", "kolmogorov2", ""]),
    )
)
def test_load_ardm_names_a_bad_name(name):
    with pytest.raises((ValueError, TypeError, FileNotFoundError)) as caught:
        load_ardm(name)
    message = str(caught.value)
    assert repr(name) in message or str(name) in message or "name" in message


_GOOD = {"strategies": ["forecast"], "regimes": ["sparse"], "horizon": 3, "trajectories": 1}
_BAD = {
    "horizon": [0, -3, 2.5, "4", True],
    "trajectories": [0, -1, 1.5, "2", False],
    "members": [0, -2, 3.5, "4"],
    "seed": [1.5, "0", None],
    "workers": [0, 2.5],
    "threads": [0, -1, 1.5],
    "strategies": [[], ["no-such-strategy"], [""], "forecast;enkf"],
    "regimes": [[], ["no-such-regime"], ["stride=0, every=1, sigma=0.1"], ["sigma=-1"]],
    "pde": ["navier", "", 3],
    "executor": ["threads", ""],
    "progress": ["loud", 3],
    "initial": ["nowcast", "background(error=-1)", 5],
    "start": [-1, 0.5],
}


@settings(max_examples=EXAMPLES["benchmark"], **SETTINGS)
@given(data=st.data())
def test_benchmark_names_the_bad_argument(data):
    argument = data.draw(st.sampled_from(sorted(_BAD)), label="argument")
    value = data.draw(st.sampled_from(_BAD[argument]), label="value")
    kwargs = {**_GOOD, "members": 2, "progress": False, argument: value}
    with pytest.raises((ValueError, TypeError)) as caught:
        benchmark(**kwargs)
    message = str(caught.value).lower()
    words = {
        "strategies": ("strateg",),
        "regimes": ("regime", "stride", "sigma", "spec"),
        "pde": ("pde", "system"),
        "initial": ("initial",),
    }.get(argument, (argument,))
    assert any(w in message for w in words), (argument, value, message)


def test_the_number_of_generated_cases():
    print(f"generated cases: {CASES} ({EXAMPLES})")
    assert CASES == 90
    assert Path(__file__).name == "test_inputs_entry_points.py"

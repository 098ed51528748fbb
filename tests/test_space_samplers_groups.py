"""Search spaces, samplers and grouping (no training here)."""

import collections
import json
import math

import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep import samplers
from rnnsweep import space as space_lib
from rnnsweep.groups import StaticConfig, split_group


# ---------------------------------------------------------------------------
# Space validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("build, words", [
    (lambda: rs.Uniform(0.5, 0.5), ["Uniform", "lo < hi"]),
    (lambda: rs.Uniform(1.0, 0.1), ["lo < hi"]),
    (lambda: rs.LogUniform(0.0, 1.0), ["LogUniform", "lo > 0"]),
    (lambda: rs.LogUniform(-1.0, 1.0), ["lo > 0"]),
    (lambda: rs.IntUniform(4, 4), ["lo < hi"]),
    (lambda: rs.IntUniform(1.5, 4), ["integers"]),
    (lambda: rs.IntUniform(0, 8, log=True), ["lo >= 1"]),
    (lambda: rs.Choice([]), ["Choice", "at least one"]),
    (lambda: rs.Space({"learning_rat": 1e-3}), ["unknown parameter",
                                                "'learning_rat'"]),
    (lambda: rs.Space({"input_dropout": 1.0}), ["'input_dropout'", "[0, 1)"]),
    (lambda: rs.Space({"output_dropout": rs.Uniform(-0.1, 0.5)}),
     ["'output_dropout'", "[0, 1)"]),
    (lambda: rs.Space({"recurrent_dropout": rs.Choice([0.1, 1.2])}),
     ["'recurrent_dropout'"]),
    (lambda: rs.Space({"hidden_size": 100.5}), ["'hidden_size'", "integer"]),
    (lambda: rs.Space({"hidden_size": rs.Uniform(32, 128)}),
     ["'hidden_size'", "integer", "IntUniform"]),
    (lambda: rs.Space({"num_layers": 0}), ["'num_layers'", ">= 1"]),
    (lambda: rs.Space({"cell": "transformer"}), ["'cell'", "lstm"]),
    (lambda: rs.Space({"optimizer": rs.Choice(["adam", "lion"])}),
     ["'optimizer'", "lion"]),
    (lambda: rs.Space({"learning_rate": 0.0}), ["'learning_rate'", "> 0"]),
    (lambda: rs.Space({"seed": -1}), ["'seed'"]),
])
def test_invalid_space_raises_naming_the_rule(build, words):
  with pytest.raises(ValueError) as e:
    build()
  message = str(e.value)
  assert "\n" not in message
  for w in words:
    assert w in message


def test_defaults_fill_unnamed_parameters():
  params = space_lib.resolve_params({"learning_rate": 0.01})
  assert params["learning_rate"] == 0.01
  assert params["cell"] == "lstm" and params["hidden_size"] == 128
  assert set(params) == set(rs.PARAMS) - {"seed"}
  assert set(space_lib.STATIC_NAMES) == {
      "cell", "hidden_size", "num_layers", "batch_size", "truncation",
      "embed_size", "optimizer", "lr_schedule", "recurrent_dropout_mode"}
  for name in ("learning_rate", "weight_decay", "input_dropout",
               "recurrent_dropout", "output_dropout", "grad_clip",
               "warmup_steps_fraction", "final_lr_fraction", "decay_rate"):
    assert name in space_lib.VECTOR_NAMES


def test_space_json_forms_and_round_trip(tmp_path):
  text = json.dumps({
      "learning_rate": {"log_uniform": [1e-4, 1e-2]},
      "output_dropout": {"uniform": [0.0, 0.5]},
      "hidden_size": {"int_uniform": [16, 256], "log": True},
      "cell": ["lstm", "gru"],
      "num_layers": 2,
  })
  space = rs.load_space(text)
  assert space.params["learning_rate"] == rs.LogUniform(1e-4, 1e-2)
  assert space.params["hidden_size"] == rs.IntUniform(16, 256, log=True)
  assert space.params["cell"] == rs.Choice(["lstm", "gru"])
  assert space.params["num_layers"] == rs.Fixed(2)
  path = tmp_path / "space.json"
  path.write_text(json.dumps(space.to_json()))
  assert rs.load_space(str(path)) == space


@pytest.mark.parametrize("text, words", [
    ("{not json", ["not valid JSON"]),
    ("[1, 2]", ["neither a JSON object nor an existing file"]),
    ('{"learning_rate": {"gaussian": [0, 1]}}', ["'learning_rate'",
                                                 "log_uniform"]),
    ('{"learning_rate": {"log_uniform": [0, 1]}}', ["'learning_rate'",
                                                    "lo > 0"]),
    ('{"learning_rate": {"uniform": [1]}}', ["'learning_rate'", "[lo, hi]"]),
    ("no_such_file.json", ["neither a JSON object nor an existing file"]),
])
def test_bad_space_json(text, words):
  with pytest.raises(ValueError) as e:
    rs.load_space(text)
  for w in words:
    assert w in str(e.value)


def test_updated_replaces_entries():
  a = rs.Space({"learning_rate": rs.LogUniform(1e-4, 1e-2), "cell": "gru"})
  b = a.updated({"cell": rs.Choice(["lstm", "simple"])})
  assert b.params["cell"] == rs.Choice(["lstm", "simple"])
  assert b.params["learning_rate"] == a.params["learning_rate"]
  assert a.params["cell"] == rs.Fixed("gru")  # a is unchanged
  with pytest.raises(ValueError, match="unknown parameter"):
    a.updated({"dropout": 0.1})


# ---------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------


# Each expected range worked out by hand: half the width past the edge
# (log width on a log scale), one step past a numeric choice's last
# value, halved while the parameter's rule refuses it.
@pytest.mark.parametrize("name, dist, side, expected", [
    # log10 width 2 -> 1 decade more.
    ("learning_rate", rs.LogUniform(1e-3, 1e-1), "high",
     rs.LogUniform(1e-3, 1.0)),
    ("learning_rate", rs.LogUniform(1e-3, 1e-1), "low",
     rs.LogUniform(1e-4, 1e-1)),
    # Half of 3 decades is 1.5, more than the factor of 10 allowed;
    # half of log10(20) is a factor of 20 ** 0.5 = 4.47.
    ("learning_rate", rs.LogUniform(1e-4, 1e-1), "high",
     rs.LogUniform(1e-4, 1.0)),
    ("learning_rate", rs.LogUniform(1e-3, 2e-2), "high",
     rs.LogUniform(1e-3, 0.0894)),
    # 0.5 + 0.3 / 2.
    ("output_dropout", rs.Uniform(0.2, 0.5), "high", rs.Uniform(0.2, 0.65)),
    # 0.8 + 0.6 / 2 = 1.1 is no rate; 0.8 + 0.6 / 4 = 0.95 is.
    ("output_dropout", rs.Uniform(0.2, 0.8), "high", rs.Uniform(0.2, 0.95)),
    # 0.1 - 0.2 < 0; 0.1 - 0.1 = 0.
    ("output_dropout", rs.Uniform(0.1, 0.5), "low", rs.Uniform(0.0, 0.5)),
    # A rate at 0 cannot go lower.
    ("output_dropout", rs.Uniform(0.0, 0.3), "low", None),
    # log2 width 2 -> 1 octave more.
    ("hidden_size", rs.IntUniform(16, 64, log=True), "high",
     rs.IntUniform(16, 128, log=True)),
    # 2 - 2 = 0 units is refused, 2 - 1 = 1 is not.
    ("hidden_size", rs.IntUniform(2, 6), "low", rs.IntUniform(1, 6)),
    # 3 + 2 / 2; 10 + 5 / 2 = 12.5, outwards to 13.
    ("num_layers", rs.IntUniform(1, 3), "high", rs.IntUniform(1, 4)),
    ("hidden_size", rs.IntUniform(5, 10), "high", rs.IntUniform(5, 13)),
    # A log-scaled choice (1000x) steps by its ratio, another by its
    # difference.
    ("learning_rate", rs.Choice([1e-3, 1e-1, 1e-2]), "high",
     rs.Choice([1e-3, 1e-2, 1e-1, 1.0])),
    # A ratio of 100 between the last two, capped at 10.
    ("learning_rate", rs.Choice([1e-4, 1e-2]), "high",
     rs.Choice([1e-4, 1e-2, 1e-1])),
    ("hidden_size", rs.Choice([16, 32, 48]), "high",
     rs.Choice([16, 32, 48, 64])),
    ("hidden_size", rs.Choice([16, 32, 48]), "low", rs.Choice([8, 16, 32, 48])),
    ("cell", rs.Choice(["lstm", "gru"]), "high", None),
    ("hidden_size", rs.Fixed(32), "high", None),
])
def test_widened_carries_a_range_past_its_edge(name, dist, side, expected):
  got = space_lib.widened(name, dist, side)
  if expected is None:
    assert got is None
    return
  assert type(got) is type(expected)
  if isinstance(expected, rs.Choice):
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-9)
  else:
    np.testing.assert_allclose([got.lo, got.hi], [expected.lo, expected.hi],
                               rtol=1e-9)
    assert got.log_scale == expected.log_scale
  with pytest.raises(ValueError, match="side must be 'low' or 'high'"):
    space_lib.widened(name, dist, "middle")


def test_grid_is_full_product():
  space = rs.Space({"cell": rs.Choice(["simple", "lstm", "gru"]),
                    "learning_rate": rs.Choice([1e-3, 1e-2]),
                    "num_layers": rs.IntUniform(1, 4),
                    "hidden_size": 64})
  trials = rs.grid(space)
  assert len(trials) == 3 * 2 * 4 == samplers.grid_size(space)
  combos = {(t.params["cell"], t.params["learning_rate"],
             t.params["num_layers"]) for t in trials}
  assert len(combos) == 24
  assert all(t.params["hidden_size"] == 64 for t in trials)
  assert [t.trial_id for t in trials] == list(range(24))
  assert len({t.seed for t in trials}) == 24


def test_grid_rejects_continuous_parameters():
  space = rs.Space({"learning_rate": rs.LogUniform(1e-4, 1e-2)})
  with pytest.raises(ValueError, match="'learning_rate'.*Choice"):
    rs.grid(space)


def test_random_is_reproducible_and_in_bounds():
  space = rs.Space({
      "learning_rate": rs.LogUniform(1e-5, 1e-1),
      "output_dropout": rs.Uniform(0.1, 0.4),
      "hidden_size": rs.IntUniform(16, 64),
      "num_layers": rs.IntLogUniform(1, 8),
      "cell": rs.Choice(["lstm", "gru"]),
  })
  a = rs.random(space, 400, seed=3)
  b = rs.random(space, 400, seed=3)
  c = rs.random(space, 400, seed=4)
  assert [t.params for t in a] == [t.params for t in b]
  assert [t.params for t in a] != [t.params for t in c]
  for t in a:
    p = t.params
    assert 1e-5 <= p["learning_rate"] < 1e-1
    assert 0.1 <= p["output_dropout"] < 0.4
    assert 16 <= p["hidden_size"] <= 64 and isinstance(p["hidden_size"], int)
    assert 1 <= p["num_layers"] <= 8
    assert p["cell"] in ("lstm", "gru")
  # Every integer of the range is reachable, both ends included.
  assert {t.params["hidden_size"] for t in a} >= {16, 64}
  assert {t.params["num_layers"] for t in a} == set(range(1, 9))
  # Extending a sweep keeps the trials already drawn.
  assert [t.params for t in rs.random(space, 10, seed=3)] == [
      t.params for t in a[:10]]


def test_log_uniform_spreads_over_decades():
  space = rs.Space({"learning_rate": rs.LogUniform(1e-5, 1e-1)})
  values = np.array([t.params["learning_rate"]
                     for t in rs.random(space, 2000, seed=0)])
  decades = collections.Counter(np.floor(np.log10(values)).astype(int))
  assert set(decades) == {-5, -4, -3, -2}
  for d in decades.values():  # 500 expected per decade
    assert 400 < d < 600
  # A plain Uniform over the same range puts ~90% in the top decade.
  uni = rs.Space({"learning_rate": rs.Uniform(1e-5, 1e-1)})
  top = np.mean([t.params["learning_rate"] >= 1e-2
                 for t in rs.random(uni, 2000, seed=0)])
  assert top > 0.85


def test_seeds_depend_on_sweep_seed_and_id_only():
  trials = rs.make_trials([{}, {"learning_rate": 0.1}, {"seed": 42}], seed=5)
  assert trials[0].seed == samplers.derive_seed(5, 0)
  assert trials[1].seed == samplers.derive_seed(5, 1)
  assert trials[2].seed == 42 == trials[2].params["seed"]
  assert samplers.derive_seed(5, 0) != samplers.derive_seed(6, 0)
  assert 0 <= samplers.derive_seed(123, 456) < 2**31


def test_seeds_run_each_configuration_first_on_its_own_seed(tiny_adding):
  space = rs.Space({"learning_rate": rs.LogUniform(1e-3, 1e-1),
                    "cell": rs.Choice(["lstm", "gru"]), "hidden_size": 4})
  make = lambda n, seeds: rs.sweep_settings(
      tiny_adding, space, sampler="random", num_trials=n, steps=4,
      eval_every=2, seed=3, seeds=seeds)
  one, once, _ = make(4, 1)
  three, thrice, _ = make(4, 3)
  assert three.num_trials == 12 and three.sampler_options == {"seeds": 3}
  assert one.sampler_options == {}  # the same record (and workdir) as before
  assert [t.trial_id for t in thrice] == list(range(12))
  for i, t in enumerate(once):
    runs = thrice[3 * i:3 * i + 3]
    # The first run is the trial itself: the same values and seed.
    assert (runs[0].params, runs[0].seed) == (t.params, t.seed)
    # The others differ in the seed alone, a function of the trial's own.
    assert [r.seed for r in runs[1:]] == [
        samplers.replica_seed(t.seed, 1), samplers.replica_seed(t.seed, 2)]
    for r in runs[1:]:
      assert {**r.params, "seed": t.seed} == dict(t.params)
      assert r.params["seed"] == r.seed
  seeds = [t.seed for t in thrice]
  assert len(set(seeds)) == 12 and all(0 <= s < 2**31 for s in seeds)
  # More configurations keep the runs there were (--extend).
  _, more, _ = make(6, 3)
  assert [(t.params, t.seed) for t in more[:12]] == [
      (t.params, t.seed) for t in thrice]
  # A configuration that names its seed (a results.csv row) starts there,
  # wherever it stands and whatever the sweep seed.
  _, rows, _ = rs.runner.trials_settings(
      tiny_adding, [{"learning_rate": 0.01}, {"seed": 77}], steps=4,
      eval_every=2, seed=9, seeds=2)
  assert [t.seed for t in rows[2:]] == [77, samplers.replica_seed(77, 1)]
  assert rows[0].seed == samplers.derive_seed(9, 0)
  # The leaderboard shows the seeds, though no configuration names one.
  _, _, shown = rs.runner.trials_settings(
      tiny_adding, [{"learning_rate": 0.01}, {"learning_rate": 0.1}],
      steps=4, eval_every=2, seeds=2)
  assert shown == ["learning_rate", "seed"]


@pytest.mark.parametrize("kwargs, words", [
    ({"seeds": 0}, ["seeds", "positive integer", "0"]),
    ({"seeds": True}, ["seeds", "positive integer"]),
    ({"seeds": 2.0}, ["seeds", "positive integer"]),
    ({"sampler": "grid", "seeds": 2, "space": {"seed": rs.Choice([1, 2])}},
     ["'seed' varies", "seeds=2", "one way"]),
    ({"sampler": "random", "space": {"seed": rs.Choice([1, 2])}},
     ["'seed' varies", "'random'", "--seeds=N"]),
    ({"sampler": "quasirandom", "space": {"seed": rs.IntUniform(0, 9)}},
     ["'seed' varies", "'quasirandom'", "--seeds=N"]),
    ({"sampler": "optuna:tpe", "space": {"seed": rs.Choice([1, 2])}},
     ["'seed' varies", "'optuna:tpe'", "luckiest", "--seeds=N"]),
    ({"sampler_options": {"seeds": 2}}, ["seeds", "not a sampler option"]),
    ({"scheduler": "pbt", "seeds": 2}, ["seeds=2", "'pbt'", "population"]),
    ({"scheduler": rs.SchedulerSettings("pbt"), "seeds": 3},
     ["seeds=3", "'pbt'"]),
])
def test_bad_seeds_raise_one_line(tiny_adding, kwargs, words):
  kwargs = dict(kwargs)
  space = rs.Space({"learning_rate": rs.Choice([0.01, 0.1]),
                    **kwargs.pop("space", {})})
  with pytest.raises(ValueError) as e:
    rs.sweep_settings(tiny_adding, space, **{"num_trials": 2, **kwargs})
  assert "\n" not in str(e.value)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_grid_and_around_take_a_space_whose_seed_varies(tiny_adding):
  space = rs.Space({"learning_rate": rs.Choice([0.01, 0.1]),
                    "seed": rs.Choice([1, 2])})
  _, grid, _ = rs.sweep_settings(tiny_adding, space, sampler="grid")
  assert sorted(t.seed for t in grid) == [1, 1, 2, 2]
  _, around, _ = rs.sweep_settings(
      tiny_adding, space, sampler="around",
      sampler_options={"base": {"learning_rate": 0.01}})
  assert [(t.params["learning_rate"], t.seed) for t in around] == [
      (0.01, 1), (0.01, 2), (0.1, 1), (0.1, 2)]


def test_random_rejects_bad_num_trials():
  with pytest.raises(ValueError, match="num_trials"):
    rs.random(rs.Space(), 0)


# ---------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_group_size", [1, 3, 4, 7, 100])
def test_every_trial_in_exactly_one_group(max_group_size):
  space = rs.Space({"cell": rs.Choice(["simple", "lstm", "gru"]),
                    "hidden_size": rs.Choice([16, 32]),
                    "learning_rate": rs.LogUniform(1e-4, 1e-2)})
  trials = rs.random(space, 37, seed=1)
  groups = rs.plan_groups(trials, max_group_size)
  seen = [t.trial_id for g in groups for t in g.trials]
  assert sorted(seen) == list(range(37))
  sizes_by_static = collections.defaultdict(set)
  for g in groups:
    assert 1 <= len(g.trials) <= g.size <= max_group_size
    assert {StaticConfig.from_params(t.params) for t in g.trials} == {g.static}
    assert len(g.padded_trials()) == g.size
    sizes_by_static[g.static].add(g.size)
  # One K per static config: one compiled program per bucket.
  assert all(len(s) == 1 for s in sizes_by_static.values())
  assert len(sizes_by_static) == len({StaticConfig.from_params(t.params)
                                      for t in trials})


def test_groups_split_evenly():
  trials = rs.make_trials([{"learning_rate": 1e-3 * (i + 1)}
                           for i in range(10)])
  groups = rs.plan_groups(trials, 8)
  assert [len(g.trials) for g in groups] == [5, 5]
  groups = rs.plan_groups(trials, 4)
  assert [len(g.trials) for g in groups] == [4, 4, 2]
  assert [g.size for g in groups] == [4, 4, 4]
  assert groups[2].num_padding == 2
  assert all(math.isclose(p.params["learning_rate"], 9e-3)
             for p in groups[2].padded_trials()[2:])


def test_bad_max_group_size():
  with pytest.raises(ValueError, match="max_group_size"):
    rs.plan_groups(rs.make_trials([{}]), 0)


def test_group_sizer_is_asked_once_per_bucket():
  space = rs.Space({"cell": rs.Choice(["lstm", "gru"]),
                    "learning_rate": rs.LogUniform(1e-4, 1e-2)})
  trials = rs.random(space, 20, seed=2)
  asked = []

  def sizer(static, members):
    asked.append((static.cell, [t.trial_id for t in members]))
    return 3 if static.cell == "lstm" else 100

  groups = rs.plan_groups(trials, sizer)
  by_cell = collections.defaultdict(list)
  for t in trials:
    by_cell[t.params["cell"]].append(t.trial_id)
  assert sorted(asked) == sorted(by_cell.items())
  assert all(g.size <= 3 for g in groups if g.static.cell == "lstm")
  assert [len(g.trials) for g in groups if g.static.cell == "gru"] == [
      len(by_cell["gru"])]
  with pytest.raises(ValueError, match="max_group_size"):
    rs.plan_groups(trials, lambda static, members: 0)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_split_group_halves(n):
  trials = rs.make_trials([{"learning_rate": 1e-3 * (i + 1)}
                           for i in range(n)])
  group = rs.plan_groups(trials, n)[0]
  parts = split_group(group, 7)
  assert [p.group_id for p in parts] == [7, 8]
  assert [t for p in parts for t in p.trials] == list(group.trials)
  assert {p.size for p in parts} == {math.ceil(n / 2)}
  with pytest.raises(ValueError, match="cannot be split"):
    split_group(rs.plan_groups(trials[:1], 1)[0], 0)


@pytest.mark.parametrize("value,expected", [("auto", "auto"), (3, 3),
                                            ("16", 16)])
def test_max_group_size_values(value, expected):
  assert rs.sizing.check_max_group_size(value) == expected


@pytest.mark.parametrize("value", [0, -2, "big", 1.5, True, None])
def test_bad_max_group_size_values(value):
  with pytest.raises(ValueError, match="max_group_size must be 'auto' or"):
    rs.sizing.check_max_group_size(value)


class _CountedRepr:
  """A parameter value that counts how often it is spelt out."""

  calls = 0

  def __init__(self, value):
    self.value = value

  def __repr__(self):
    _CountedRepr.calls += 1
    return repr(self.value)


@pytest.mark.parametrize("configs, varied", [
    ([{"learning_rate": 0.1}, {"learning_rate": 0.2}], ["learning_rate"]),
    ([{"learning_rate": 0.1}, {"learning_rate": 0.1}], []),
    # Left out by one configuration: it takes the default, so it varies.
    ([{"learning_rate": 0.1}, {}], ["learning_rate"]),
    ([{"cell": "gru", "seed": 3}, {"cell": "gru", "seed": 4},
      {"cell": "lstm", "seed": 3}], ["cell", "seed"]),
    ([{}], []),
    ([], []),
])
def test_varied_names(configs, varied):
  assert rs.runner.varied_names(configs) == varied


def test_varied_names_look_at_each_value_at_most_once():
  # The leaderboard's columns for a list of configurations, against a
  # plain reference (each name's distinct values), on lists where names
  # come and go; and at most one look per value: a 1,024-trial list spent
  # 3.8 s here when every configuration rescanned the list.
  rng = np.random.default_rng(0)
  names = ["a", "b", "c", "d"]
  for _ in range(20):
    configs = [{k: int(rng.integers(0, 2)) for k in names
                if rng.random() < 0.7} for _ in range(int(rng.integers(1, 6)))]
    expected = sorted(k for k in names if any(k in c for c in configs)
                      and len({json.dumps(c.get(k)) for c in configs}) > 1)
    assert rs.runner.varied_names(configs) == expected
  n = 400
  configs = [{"learning_rate": _CountedRepr(0.1 * (i == n - 1)),
              "hidden_size": _CountedRepr(8)} for i in range(n)]
  _CountedRepr.calls = 0
  assert rs.runner.varied_names(configs) == ["learning_rate"]
  assert _CountedRepr.calls <= 2 * n

"""``mbrl-control tune``: controller parameters by closed-loop search on an identified model.

Each evaluation drives ``--laps`` lap(s) of ``--track`` in the offline closed loop
(:class:`~mbrl_control.sim.runner.ClosedLoop`) against a plant that stands in for the car:

* ``--model FILE`` (default): the model ``fit`` identified from a bag, stepped as the plant
  (:class:`ModelPlant`); also ``dynamic`` / ``kinematic`` (nominal);
* ``--bag BAG``: identify that model first (``fit``'s pipeline), then as ``--model``;
* ``--plant-vehicle YAML``: the built-in single-track plant with those parameters.

The controller predicts with ``--controller-model`` (default: the plant's model, as it would
after ``fit``). The objective (minimised, seconds) is the best lap time plus
``--violation-penalty`` per control step outside the track; a run that fails (leaves the track
for good, stops, or runs out of time) scores ``time_limit * (2 - fraction_of_distance_done)``,
worse than any finished run and better the further it got.

The search is Optuna's TPE sampler (seeded, multivariate; the default configuration is the first
trial, so the study reports the gain over it). Evaluations run in parallel: worker processes on
the local cores (``--jobs``, default all), or Ray tasks on a cluster with ``--ray ADDRESS``
(``--ray local`` starts a private local instance). Results: ``tuned.yaml`` (the base config with
the tuned section, ``controller_node: ros__parameters:`` as ``sim --config`` and the launch files
read it), ``trials.json``, ``tune.json`` (summary) and ``search.png`` in ``--out``. With
``--validate-track`` the default and tuned configurations are also driven on another track
(and ``--validate-plant-vehicle``, e.g. the true car's parameters) and compared.

Search spaces: built in for pure_pursuit, mppi and ilqr (their parameters that exist), or a YAML
``--space`` mapping ``name: {low, high[, log][, type: float|int]}`` or ``name: {choices: [...]}``;
``name`` is a controller option, ``section.option`` inside a nested mapping (``cost.progress_weight``)
or ``option[i]`` for a list element.
"""

from mbrl_control.apps.tune.cli import add_arguments, identify_from_bag, main
from mbrl_control.apps.tune.evaluation import EvalSpec, ModelPlant, TuneConfig, evaluate, score
from mbrl_control.apps.tune.search import TuneResult, run_search
from mbrl_control.apps.tune.space import (DEFAULT_SPACES, Dimension, default_values, get_option, parse_space, set_option,
                                          trial_options)

__all__ = ["DEFAULT_SPACES", "Dimension", "EvalSpec", "ModelPlant", "TuneConfig", "TuneResult", "add_arguments",
           "default_values", "evaluate", "get_option", "identify_from_bag", "main", "parse_space", "run_search", "score",
           "set_option", "trial_options"]

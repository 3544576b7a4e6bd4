"""The learned residual's one written definition: an ensemble of tanh MLPs on normalised features.

Written once over the math vocabulary (:mod:`mbrl_control.ops`, with its
:data:`~mbrl_control.ops.NETWORK_VOCABULARY`); every form derives from it:

* torch (:class:`mbrl_control.models.residual.ResidualEnsemble`, training and the MPPI torch
  backend): ``m = ops.torch_ops``, ``features`` a batch of rows, all members in one batched
  product per layer;
* CasADi (NMPC, :func:`mbrl_control.control.nmpc.casadi_model_step`): ``m = ops.casadi_ops``,
  ``features`` one column, the members as columns;
* NumPy float64 (:meth:`~mbrl_control.models.residual.ResidualWeights.mean_numpy`, the tests'
  reference): ``m = ops.numpy_ops``.

The two Numba executors, :mod:`mbrl_control.kernels.residual_mlp` (MPPI: register-blocked lanes,
normalisation folded into the weights) and the closed-form derivatives of
:mod:`mbrl_control.kernels.ilqr_vehicle` (iLQR/DDP), are hand-specialised for speed and tied to
this definition by tests (``test/test_residual_definition.py``).

``net`` is a record (:func:`network`) of per-layer weights ``(E, out, in)`` and biases ``(E, out)``
(the last layer has ``2 * OUTPUT_DIM`` rows: normalised mean, raw log-variance), the input and
output statistics and the soft log-variance bounds, in the backend's own types.
"""

from __future__ import annotations

from mbrl_control.ops import record

OUTPUT_DIM = 3
"""Corrected states (V, YAW_RATE, SLIP); the last layer has ``2 * OUTPUT_DIM`` rows (mean, log-variance)."""
NETWORK_FIELDS = ("weights", "biases", "in_mean", "in_std", "out_mean", "out_std", "min_logvar", "max_logvar")


def network(weights, biases, in_mean, in_std, out_mean, out_std, min_logvar=-10.0, max_logvar=2.0):
    """The record ``net`` the definitions read (values in the backend's types)."""
    return record(NETWORK_FIELDS, (weights, biases, in_mean, in_std, out_mean, out_std, min_logvar, max_logvar))


def mlp(m, weights, biases, h):
    """Raw outputs of every member for normalised inputs ``h``: tanh hidden layers, a linear last layer."""
    last = len(weights) - 1
    for i in range(last + 1):
        h = m.affine(weights[i], biases[i], h)
        if i < last:  # the layer structure, not a value
            h = m.tanh(h)
    return h


def member_outputs(m, net, features):
    """(mean, bounded log-variance) of every member in normalised units, for ``features``
    (steer, v, yaw_rate, slip, steer_cmd, accel): the log-variance is bounded softly to
    ``[min_logvar, max_logvar]`` (PETS, Chua et al. 2018)."""
    y = raw_outputs(m, net, features)
    logvar = net.max_logvar - m.softplus(net.max_logvar - m.part(y, OUTPUT_DIM, 2 * OUTPUT_DIM))
    return m.part(y, 0, OUTPUT_DIM), net.min_logvar + m.softplus(logvar - net.min_logvar)


def member_means(m, net, features):
    """Every member's correction of (V, YAW_RATE, SLIP) in state units."""
    return denormalise(net, normalised_means(m, net, features))


def ensemble_mean(m, net, features):
    """The correction of (V, YAW_RATE, SLIP) the model applies: the members' mean, in state units."""
    return denormalise(net, m.member_average(normalised_means(m, net, features)))


def raw_outputs(m, net, features):
    """Every member's ``2 * OUTPUT_DIM`` raw outputs (normalised mean, unbounded log-variance)."""
    return mlp(m, net.weights, net.biases, (features - net.in_mean) / net.in_std)


def normalised_means(m, net, features):
    """Every member's mean output in normalised units."""
    return m.part(raw_outputs(m, net, features), 0, OUTPUT_DIM)


def denormalise(net, mean):
    """Normalised mean output -> correction in state units."""
    return net.out_mean + net.out_std * mean

"""Reinforcement learning with equivariant policies: envs, symmetries, JAX DQN, policies.

* :func:`make_env` — gymnax ``CartPole-v1`` / ``Acrobot-v1`` and the C4 :class:`Gridworld`.
* :func:`get_symmetry` — the group acting on observations and actions (:class:`EnvSymmetry`).
* :func:`train` / :func:`train_chunk` — DQN (stable-baselines3 defaults) as one jitted scan.
* :func:`make_q_fn` — pretrained / equitune / equizero / λ-equitune Q-functions;
  :func:`train_lambda` obtains λ; :func:`evaluate` runs vectorised evaluation episodes
  (an :class:`Evaluation`); :func:`td_loss` is the one TD loss of both trainings.

gymnax (``pip install 'equijax[rl]'``) is needed for CartPole and Acrobot only.
"""

from equijax.rl.dqn import (
    DQNConfig,
    DQNState,
    QNetwork,
    ReplayBuffer,
    init_state,
    q_values,
    td_loss,
    train,
    train_chunk,
)
from equijax.rl.envs import ENV_NAMES, make_env
from equijax.rl.gridworld import Gridworld
from equijax.rl.policies import (
    METHODS,
    Evaluation,
    LambdaConfig,
    evaluate,
    greedy_policy,
    lambda_weight_fn,
    make_q_fn,
    train_lambda,
)
from equijax.rl.symmetries import EnvSymmetry, get_symmetry

__all__ = [
    "ENV_NAMES",
    "METHODS",
    "DQNConfig",
    "DQNState",
    "EnvSymmetry",
    "Evaluation",
    "Gridworld",
    "LambdaConfig",
    "QNetwork",
    "ReplayBuffer",
    "evaluate",
    "get_symmetry",
    "greedy_policy",
    "init_state",
    "lambda_weight_fn",
    "make_env",
    "make_q_fn",
    "q_values",
    "td_loss",
    "train",
    "train_chunk",
    "train_lambda",
]

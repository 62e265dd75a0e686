"""FedAvg on scikit-learn's digits (no download), 20 clients, Dirichlet 0.3.

    fedjax-gen run quickstart --workdir /tmp/quickstart
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="digits", partition="dirichlet", alpha=0.3, num_clients=20,
                clients_per_round=10, rounds=40, local_epochs=2, batch_size=16, lr=0.05,
                momentum=0.9, model="mlp", algorithm="fedavg", eval_every=5,
                checkpoint_every=10)
  return config

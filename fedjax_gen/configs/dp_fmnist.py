"""Client-level DP-FedAvg on Fashion-MNIST: 1,000 clients, 100 per round, simple CNN.

Dir(0.5) over 1,000 clients (about 60 images each), 100 sampled per round, 100 rounds of two
local epochs (batch 32, SGD lr 0.1); DP-FedAvg (McMahan et al., ICLR 2018) clips each
upload to L2 norm 0.5 and adds Gaussian noise to the sum; the noise is calibrated so the
run spends `dp.target_epsilon` at delta 1e-5 (RDP accountant, fixed-size cohorts):

    fedjax-gen run dp_fmnist dp.target_epsilon=8 --workdir W
    fedjax-gen run dp_fmnist dp.enabled=false --workdir W        # the same without DP

`summary.json` holds `privacy` (epsilon, delta, noise, clip, sampling, population, cohort,
rounds, accountant: enough to recompute epsilon with dp-accounting) and `audit` (a
loss-threshold membership attack on the final model).
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="fashion_mnist", partition="dirichlet", alpha=0.5, num_clients=1000,
                clients_per_round=100, rounds=100, local_epochs=2, batch_size=32, lr=0.1,
                momentum=0.0, model="simple_cnn", algorithm="fedavg", eval_every=10,
                checkpoint_every=10)
  config.data.update(test_fraction=0.0, min_client_size=10)
  config.dp.update(enabled=True, clip_norm=0.5, target_epsilon=8.0, delta=1e-5)
  return config

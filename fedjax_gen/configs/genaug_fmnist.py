"""Gen-FedSD and GenFL (generative augmentation) on Fashion-MNIST, NIID-Bench setup.

NIID-Bench's Fashion-MNIST setting (`niid_fmnist`: 10 parties, all participating, 50 rounds,
10 local epochs, batch 64, SGD lr 0.01 momentum 0.9, simple-CNN, Dir(0.5), global test
accuracy) with a class-conditional DDPM trained by federated learning as the generator:

    fedjax-gen run ddpm_fmnist --workdir experiments/runs/ddpm_fmnist/federated  # once
    fedjax-gen run genaug_fmnist --workdir W                        # FedAvg (the baseline)
    fedjax-gen run genaug_fmnist algorithm=gen_fedsd --workdir W    # Gen-FedSD (arXiv 2405.07925)
    fedjax-gen run genaug_fmnist algorithm=genfl --workdir W        # GenFL (arXiv 2503.20166)
    fedjax-gen run genaug_fmnist algorithm=aigc_only --workdir W    # synthetic data alone
    fedjax-gen run genaug_fmnist algorithm=gen_fedsd partition=label_k classes_per_client=2 ...

`genaug.generator_dir` defaults to `experiments/runs/ddpm_fmnist/federated/generator`, the DDPM the
command above leaves; a relative path is looked up in the current folder, then in the
repository root (pass `genaug.generator_dir=/abs/path` for another). Generated images are cached
in `W/generated` (`genaug.cache_dir`). Gen-FedSD's default `genaug.fill_rule=max` fills every
client's classes up to its largest (under Dir(0.5) tens of thousands of images: minutes
of DDPM sampling on a CPU); `genaug.fill_rule=budget genaug.fill_budget=N` bounds it. The GenFL choices
(synthetic set, share, lam policy, weights) are ours where the paper is silent: see
`fedjax_gen/algorithms/genfl.py`.
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="fashion_mnist", partition="dirichlet", alpha=0.5, num_clients=10,
                clients_per_round=10, rounds=50, local_epochs=10, batch_size=64, lr=0.01,
                momentum=0.9, model="simple_cnn", algorithm="fedavg", eval_every=1,
                checkpoint_every=1)
  config.data.update(test_fraction=0.0)
  config.fl.update(prox_mu=0.01)
  config.genaug.update(generator="ddpm",
                       generator_dir="experiments/runs/ddpm_fmnist/federated/generator",
                       sample_steps=25, guidance=4.0, fill_rule="max")
  config.genfl.update(synthetic_per_class=300, share=0.2, server_steps=20)
  return config

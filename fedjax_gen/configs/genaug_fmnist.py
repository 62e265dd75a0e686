"""Generative augmentation against non-IID data on Fashion-MNIST (NIID-Bench setup).

NIID-Bench's Fashion-MNIST setting (`niid_fmnist`: 10 parties, all participating, 50 rounds,
10 local epochs, batch 64, SGD lr 0.01 momentum 0.9, simple-CNN, Dir(0.5), global test
accuracy) with a class-conditional DDPM trained by federated learning as the generator:

    fedjax-gen run ddpm_fmnist --workdir experiments/runs/ddpm_fmnist/federated  # once
    fedjax-gen run genaug_fmnist --workdir W                        # FedAvg (the baseline)
    fedjax-gen run genaug_fmnist algorithm=gen_fedsd --workdir W    # Gen-FedSD (arXiv 2405.07925)
    fedjax-gen run genaug_fmnist algorithm=genfl --workdir W        # GenFL (arXiv 2503.20166)
    fedjax-gen run genaug_fmnist algorithm=aigc_only --workdir W    # synthetic data alone
    fedjax-gen run genaug_fmnist algorithm=gen_fedsd partition=label_k classes_per_client=2 ...

`generator_dir` defaults to `experiments/runs/ddpm_fmnist/federated/generator`, the DDPM the
command above leaves; a relative path is looked up in the current folder, then in the
repository root (pass `generator_dir=/abs/path` for another). Generated images are cached
in `W/generated` (`generated_cache_dir`). Gen-FedSD's default `fill_rule=max` fills every
client's classes up to its largest (under Dir(0.5) tens of thousands of images: minutes
of DDPM sampling on a CPU); `fill_rule=budget fill_budget=N` bounds it. The GenFL choices
(synthetic set, share, lam policy, weights) are ours where the paper is silent: see
`fedjax_gen/genaug/genfl.py`.
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(dataset="fashion_mnist", partition="dirichlet", alpha=0.5, num_clients=10,
                clients_per_round=10, rounds=50, local_epochs=10, batch_size=64, lr=0.01,
                momentum=0.9, model="simple_cnn", algorithm="fedavg", test_fraction=0.0,
                prox_mu=0.01, eval_every=1, checkpoint_every=1,
                generator="ddpm",
                generator_dir="experiments/runs/ddpm_fmnist/federated/generator",
                generator_sample_steps=25, generator_guidance=4.0,
                fill_rule="max", genfl_synthetic_per_class=300, genfl_share=0.2,
                genfl_server_steps=20)
  return config

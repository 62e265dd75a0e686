"""A federated (or central) class-conditional DDPM on Fashion-MNIST.

Trained by federated learning (10 clients, Dirichlet 0.5, FedAvg over the UNet; no image
leaves a client) or centrally (`ddpm.central=true`).

    fedjax-gen run ddpm_fmnist --workdir W                 # federated
    fedjax-gen run ddpm_fmnist ddpm.central=true --workdir W    # a server holding all the data

`W/summary.json` reports `cas`, `frechet_distance` (at `ddpm.guidance_scale`, and at each scale of
`ddpm.eval_guidance_scales` in `guidance_sweep`, plotted in `W/guidance.png`),
`train_wall_time_s` and `sample_images_per_s`; `W/samples.png` shows samples per class;
`W/generator/` is the trained DDPM (EMA weights) that `genaug_fmnist` (Gen-FedSD, GenFL)
points at. The training budget is sized for one CPU core (~35 s a round): 200 rounds of
5 clients x 20 local Adam steps (batch 32) = 20,000 client steps, 4,000 of them sequential.
`ddpm.central=true` trains one client for `rounds` x `local_steps` steps (the results table uses
rounds=70 local_steps=100).
"""

from fedjax_gen.config import base_config


def get_config():
  config = base_config()
  config.update(task="ddpm", dataset="fashion_mnist", partition="dirichlet", alpha=0.5,
                num_clients=10, clients_per_round=5, rounds=200, local_steps=20, batch_size=32,
                lr=2e-3, checkpoint_every=5, eval_every=1)
  config.ddpm.update(unet_channels="16,32,32", sample_steps=25, guidance_scale=4.0,
                     eval_guidance_scales="1,2,4,6,8", eval_samples_per_class=50)
  config.data.update(test_fraction=0.0, min_client_size=10)
  return config

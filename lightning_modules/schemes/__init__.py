"""Training schemes: how a net is trained, on one base (``base.RestorationScheme``) that evaluates, logs, guards
against non-finite losses and says what a checkpoint records, so a scheme writes only its training step and
its optimizers. ``supervised.SupervisedScheme``: degraded → clean with a pixel loss (every paper config);
``adversarial.AdversarialScheme``: generator against discriminator (SRGAN, DeblurGAN);
``meta_transfer.MetaTransferScheme``: MAML over kernels (MZSR)."""

"""Research methods on top of the engine: distillation (BAM!), GAN-BERT, masked-LM pre-training."""

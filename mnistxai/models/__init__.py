"""The models: the BatchNorm CNN (written once as a layer specification, ``spec``), the
``Classifier`` contract the XAI module explains, the VAE, the DCGAN generator and its code prior.
Pure Flax modules and pytrees; nothing here trains, reads files or plots."""

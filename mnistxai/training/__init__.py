"""Training: the generic jitted epoch loop with exact resume (``loop``), each model's steps and
configuration (``cnn``, ``generative``), the generator's quality measures (``generative_eval``),
and every orbax call (``checkpoint``)."""

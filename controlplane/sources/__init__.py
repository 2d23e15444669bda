"""Sources turn files or Kubernetes objects into model objects, and nothing else."""

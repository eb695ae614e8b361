"""The operator's Kubernetes I/O outside kopf's own patching: one module, `kubernetes`."""

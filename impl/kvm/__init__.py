"""A KVM adapter: the host's own Linux KVM under test, at conformance level black-box (docs/kvm.md)."""

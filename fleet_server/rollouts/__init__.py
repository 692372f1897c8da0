"""Staged rollouts: planning and policy (pure), the controller and the service around them."""

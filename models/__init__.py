"""Quench's domain models (pydantic v2): finding, credential, principal, case, evidence,
action, approval, phase, and the inputs and results of every workflow and activity."""

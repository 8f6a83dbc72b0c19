"""The finding webhook: GuardDuty findings in, cases opened or joined in Temporal."""

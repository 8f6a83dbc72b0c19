"""The lab: an AWS account on moto with a real-looking credential compromise in it.

It fills exactly moto's gaps (CloudTrail log delivery, GuardDuty findings, the SSM agent
and the instance metadata service) so that Quench's production code runs unchanged.
"""

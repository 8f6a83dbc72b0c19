"""The playbook's judgement as pure functions: what a credential's CloudTrail records mean
(playbook 3.1-3.3) and in which order the attacker's resources come out (3.4)."""

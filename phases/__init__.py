"""The dream phases (light sleep, REM, deep sleep): plans, locks and the ledger.

Nothing lives here yet: the phases arrive with the dreaming work (issue 5).
"""

"""Runnable worldflow examples: ``python -m examples.<name>`` from the repository root.

- ``hail_ride``: four steps, a retry and ``asyncio.gather`` (what ``scripts/demo`` runs)
- ``loyalty_reward``: a durable ``sleep("3d")``, tested in milliseconds with a virtual clock
- ``payment_webhook``: a run paused until an outside service calls its webhook URL
- ``research_agent``: an AI-agent loop: plan, parallel tool calls, human approval with a timeout
"""

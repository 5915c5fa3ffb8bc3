"""Fine-tuning jobs: the state machine, the service the API calls, the scheduler and runners.

Owns: job rows, their events and checkpoints, job directories. Imports no torch."""

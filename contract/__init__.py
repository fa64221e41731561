"""The contract between the stages: how a record becomes a training row and a prompt, what the schema says
about key order, decoding bounds and scoring, and the one typed configuration every command reads.

Every stage imports from here; nothing here imports a stage."""

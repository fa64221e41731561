"""Stage 3: merge the trained adapter into the full-precision base, with a proof that the merged model computes
what base + adapter computes."""

-- Every change of a build's state rewrote its entry in each index that
-- holds the state; two of them served nobody:
-- builds_queue ordered scheduled builds for RunnableBuilds, which the
-- coordinator no longer reads (it pages scheduled builds by seq, through
-- builds_state_seq, and orders them itself); builds_derivation is the
-- prefix of builds_derivation_state. bench/dbstore, 200,000 builds: an
-- allocation 228 → 184-194 µs p50, a failed dependent 67 → 57-58 µs.
DROP INDEX builds_queue;
DROP INDEX builds_derivation;

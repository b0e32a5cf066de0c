/**
 * How the replication use cases talk to their front end while they run:
 * progress lines, and the final summary of a step. Nothing in lib/replication
 * prints; the CLI puts these on stderr, the Bacula plugin in its job log.
 *
 * @module
 */

/** One message of a running use case. */
export type Notify = (kind: "progress" | "done", text: string) => void;

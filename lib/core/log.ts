/**
 * What a long-running use case tells its front end as it goes (a server's
 * clients, a rebuilt index, a failed read): lines of a kind, which the
 * front end prints or reports. Nothing below a front end prints.
 *
 * @module
 */

/** How much a line matters. */
export type LogKind = "info" | "warning" | "error";

/** Where a use case's lines go. */
export type Log = (kind: LogKind, text: string) => void;

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

/** The kinds of a job's messages: a job fails by throwing, never by an `error` line. */
export type MessageKind = Exclude<LogKind, "error">;

/** The message callback every backup or restore job takes; the front end words and shows it. */
export type OnMessage = (kind: MessageKind, text: string) => void;

/**
 * How a use case tells its front end something while it runs. Nothing below
 * a front end prints: the CLI writes these to stderr, the Bacula backend sends
 * them as job messages.
 *
 * @module
 */

/** `info` is for the log; `warning` is something the user should act on or know. */
export type MessageKind = "info" | "warning";

/** The message callback every use case takes. */
export type OnMessage = (kind: MessageKind, text: string) => void;

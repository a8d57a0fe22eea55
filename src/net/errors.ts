/**
 * Socket error codes that mean this host ran out of something (descriptors, kernel buffers,
 * local ports, memory): the error of the request or probe that met it, never a failure of the
 * server it was going to; and the kinds of failure a connection to a server can meet.
 * Ground floor: imports nothing.
 */
const LOCAL_RESOURCE_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'EADDRNOTAVAIL', 'ENOMEM']);

/** Whether `code` is one of this host's resource errors. */
export function isLocalResourceError(code: string | undefined): boolean {
  return code !== undefined && LOCAL_RESOURCE_ERRORS.has(code);
}

/**
 * Why an attempt failed, as nginx and our metrics name it. `local`: this host ran out of a
 * resource (see isLocalResourceError above): the request's error, never the server's failure.
 */
export type FailureKind = 'refused' | 'timeout' | 'reset' | 'error' | 'invalid_header' | 'local';

/**
 * The FailureKind of a socket or node:http error by its code (the upstream transport and the TCP
 * proxy use this one mapping). A timeout we detected ourselves is the caller's to report.
 */
export function failureKind(err: NodeJS.ErrnoException): FailureKind {
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED') return 'refused';
  if (isLocalResourceError(code)) return 'local';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNABORTED') return 'reset';
  if (code === 'ETIMEDOUT') return 'timeout';
  if (code.startsWith('HPE_')) return 'invalid_header';
  return 'error';
}

/**
 * Socket error codes that mean this host ran out of something (descriptors, kernel buffers,
 * local ports, memory): the error of the request or probe that met it, never a failure of the
 * server it was going to. Ground floor: imports nothing.
 */
const LOCAL_RESOURCE_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'EADDRNOTAVAIL', 'ENOMEM']);

/** Whether `code` is one of this host's resource errors. */
export function isLocalResourceError(code: string | undefined): boolean {
  return code !== undefined && LOCAL_RESOURCE_ERRORS.has(code);
}

/**
 * What import-nginx says about the nginx files (warnings, notes, errors), and where: lines of
 * included files are encoded with their file's index (LINE_BASE) while converting.
 */

/** A message about one place in the nginx file. */
export interface ImportDiagnostic {
  line: number;
  message: string;
  /** The included file the line is in; absent: the file given to importNginx. */
  file?: string;
}

/** Formats a diagnostic the way compilers do: `nginx.conf:12: warning: ...`. */
export function formatDiagnostic(file: string, kind: 'warning' | 'note' | 'error', d: ImportDiagnostic): string {
  return `${d.file ?? file}:${d.line}: ${kind}: ${d.message}`;
}

/**
 * Lines of included files are numbered `file index x LINE_BASE + line` while converting, so the
 * converter keeps one number per place (and its diagnostics sort by file, then line); importNginx
 * turns them back into file and line.
 */
const LINE_BASE = 10_000_000;

export function encodeLine(file: number, line: number): number {
  return file * LINE_BASE + line;
}

export function decodeLine(encoded: number): { file: number; line: number } {
  return { file: Math.floor(encoded / LINE_BASE), line: encoded % LINE_BASE };
}

/** "conf.d/a.conf:12": an encoded line with the name of its file (`files` by index). */
export function fileAndLine(files: readonly string[], encoded: number): string {
  const at = decodeLine(encoded);
  return `${files[at.file]}:${at.line}`;
}

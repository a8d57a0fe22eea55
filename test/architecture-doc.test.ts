/**
 * docs/architecture.md stays drawn from the code as it is:
 *
 * (a) Module map: the table under "## Module map" has one row per folder of src/ that holds .ts
 *     files, its first cell naming the folder as a code span relative to src/ (`proxy/http/`;
 *     `src/` for the files at the top, such as cli.ts). A file is documented when the row of its
 *     own folder names it by its file name as a code span (`forward.ts`). Every .ts file under
 *     src/ must be documented, and every `*.ts` code span of a row must be a file of that folder,
 *     so that adding, moving, renaming or deleting a file fails here until the table follows.
 * (b) Layers: the numbered list under "## Layers" names the folders (`config/`, ...) in the order
 *     of LAYERS in .dependency-cruiser.cjs, read from the rules the file exports.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PAGE = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8');

/** Every .ts file under src/, by its path relative to src/ (`proxy/http/forward.ts`). */
function sourceFiles(dir = join(ROOT, 'src'), prefix = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) out.push(...sourceFiles(join(dir, entry.name), `${prefix}${entry.name}/`));
    else if (entry.isFile() && entry.name.endsWith('.ts')) out.push(prefix + entry.name);
  }
  return out.sort();
}

/** The folder of a src-relative path as the table names it: `proxy/http/`, or `src/` at the top. */
function folderOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === -1 ? 'src/' : path.slice(0, slash + 1);
}

/** The lines of the section under heading `## title`, up to the next `## ` heading. */
function section(title: string): string[] {
  const lines = PAGE.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${title}`);
  if (start === -1) return [];
  const end = lines.findIndex((l, i) => i > start && l.startsWith('## '));
  return lines.slice(start + 1, end === -1 ? undefined : end);
}

const codeSpans = (text: string): string[] => [...text.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);

/** Module map rows: folder -> the `*.ts` code spans of the rest of its row; `duplicates`: folders with a second row. */
function moduleMap(): { rows: Map<string, string[]>; duplicates: string[] } {
  const rows = new Map<string, string[]>();
  const duplicates: string[] = [];
  for (const line of section('Module map')) {
    if (!line.startsWith('|') || /^\|\s*-/.test(line)) continue;
    const cells = line.split('|').slice(1, -1);
    const first = codeSpans(cells[0] ?? '');
    if (first.length !== 1 || !first[0]!.endsWith('/')) continue; // the header row
    const folder = first[0]!;
    if (rows.has(folder)) duplicates.push(folder);
    rows.set(folder, codeSpans(cells.slice(1).join('|')).filter((s) => /^[\w.-]+\.ts$/.test(s)));
  }
  return { rows, duplicates };
}

/** LAYERS of .dependency-cruiser.cjs, lowest first (the file exports its rules, which are made from it). */
function layers(): string[] {
  interface Rule { name: string; from: { path?: string; pathNot?: string } }
  const cruiser = createRequire(import.meta.url)('../.dependency-cruiser.cjs') as { forbidden: Rule[] };
  const unlayered = cruiser.forbidden.find((r) => r.name === 'no-unlayered-folder');
  const m = /^\^src\/\(([^)]+)\)\/$/.exec(unlayered?.from.pathNot ?? '');
  expect(m, 'no-unlayered-folder lists the layers as ^src/(a|b|...)/').not.toBeNull();
  const names = m![1]!.split('|');
  // The per-layer rules come in the same order (the top layer has none: nothing is above it).
  const ruled = cruiser.forbidden.filter((r) => r.name.startsWith('layer-')).map((r) => r.name.slice('layer-'.length));
  expect(ruled).toEqual(names.slice(0, -1));
  return names;
}

describe('docs/architecture.md', () => {
  const files = sourceFiles();
  const { rows, duplicates } = moduleMap();

  it('finds the source files and the module map', () => {
    expect(files).toContain('runtime/sessionlb.ts');
    expect(files).toContain('cli.ts');
    expect(rows.size).toBeGreaterThan(10);
    expect(duplicates, 'folders with two module map rows').toEqual([]);
    expect(folderOf('cli.ts')).toBe('src/');
    expect(folderOf('proxy/http/forward.ts')).toBe('proxy/http/');
  });

  it('names every .ts file under src/ in the module map row of its folder', () => {
    const missing = files.filter((f) => !(rows.get(folderOf(f)) ?? []).includes(f.slice(folderOf(f) === 'src/' ? 0 : folderOf(f).length)));
    expect(missing, 'files not in the row of their folder (add them to docs/architecture.md, "Module map")').toEqual([]);
  });

  it('names no file that is not in that folder', () => {
    const present = new Set(files);
    const stale: string[] = [];
    for (const [folder, names] of rows) {
      for (const name of names) {
        const path = folder === 'src/' ? name : folder + name;
        if (!present.has(path)) stale.push(`${folder} row: ${name}`);
      }
    }
    expect(stale).toEqual([]);
  });

  it('lists the layers in the order of LAYERS in .dependency-cruiser.cjs', () => {
    const listed = section('Layers')
      .map((l) => /^\d+\.\s+`([\w-]+)\/`/.exec(l)?.[1])
      .filter((name): name is string => name !== undefined);
    expect(listed).toEqual(layers());
  });

  it('has a module map row for every layer folder', () => {
    for (const name of layers()) expect([...rows.keys()]).toContain(`${name}/`);
  });
});

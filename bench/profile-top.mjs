#!/usr/bin/env node
/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time per function, top N,
 * and (given the number of requests served while profiling) microseconds per request.
 *
 *   node bench/profile-top.mjs FILE.cpuprofile [requests] [N]
 *   node bench/profile-top.mjs --inclusive FILE.cpuprofile [requests] [N]   # time including callees
 *   node bench/profile-top.mjs --skip=S FILE.cpuprofile [requests] [N]       # leave out the first S seconds (warm-up)
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

const args = process.argv.slice(2);
const inclusive = args.includes('--inclusive');
const skipArg = args.find((a) => a.startsWith('--skip='));
const skipUs = skipArg ? Number(skipArg.slice('--skip='.length)) * 1e6 : 0;
const [file, requestsArg, topArg] = args.filter((a) => a !== '--inclusive' && !a.startsWith('--skip='));
if (!file) {
  process.stderr.write('usage: node bench/profile-top.mjs FILE.cpuprofile [requests] [N]\n');
  process.exit(2);
}
const requests = requestsArg ? Number(requestsArg) : 0;
const top = topArg ? Number(topArg) : 25;
const profile = JSON.parse(readFileSync(file, 'utf8'));

// Sample counts per node id; each sample's interval is timeDeltas[i+1] (microseconds).
const selfUs = new Map();
const deltas = profile.timeDeltas;
let elapsedUs = 0;
for (let i = 0; i < profile.samples.length; i++) {
  elapsedUs += deltas[i] ?? 0;
  if (elapsedUs < skipUs) continue;
  const d = deltas[i + 1] ?? 0;
  selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + d);
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

// Inclusive time: a node's self time plus its descendants' (each frame counted once per stack).
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const totalUs = new Map();
const totalOf = (node) => {
  let t = totalUs.get(node.id);
  if (t !== undefined) return t;
  t = selfUs.get(node.id) ?? 0;
  for (const c of node.children ?? []) t += totalOf(byId.get(c));
  totalUs.set(node.id, t);
  return t;
};
const byFrame = new Map();
let idle = 0;
const frameKey = (cf) => {
  let where = cf.url ? cf.url.replace(/^file:\/\//, '') : '';
  if (where.startsWith('/')) where = relative(process.cwd(), where);
  return `${cf.functionName || '(anonymous)'} ${where ? `${where}:${cf.lineNumber + 1}` : ''}`.trim();
};
if (inclusive) {
  // Sum over nodes whose ancestors do not include the same frame (no double counting of recursion).
  const walk = (node, seen) => {
    const key = frameKey(node.callFrame);
    if (!seen.has(key)) byFrame.set(key, (byFrame.get(key) ?? 0) + totalOf(node));
    const next = seen.has(key) ? seen : new Set(seen).add(key);
    for (const c of node.children ?? []) walk(byId.get(c), next);
  };
  walk(profile.nodes[0], new Set());
  for (const node of profile.nodes) if (node.callFrame.functionName === '(idle)') idle += selfUs.get(node.id) ?? 0;
  byFrame.delete('(root)');
}
for (const node of inclusive ? [] : profile.nodes) {
  const us = selfUs.get(node.id) ?? 0;
  if (us === 0) continue;
  const cf = node.callFrame;
  if (cf.functionName === '(idle)') idle += us;
  let where = cf.url ? cf.url.replace(/^file:\/\//, '') : '';
  if (where.startsWith('/')) where = relative(process.cwd(), where);
  const key = `${cf.functionName || '(anonymous)'} ${where ? `${where}:${cf.lineNumber + 1}` : ''}`.trim();
  byFrame.set(key, (byFrame.get(key) ?? 0) + us);
}
const busy = total - idle;
const rows = [...byFrame].sort((a, b) => b[1] - a[1]).slice(0, top);
process.stdout.write(`profile ${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy${requests ? `, ${requests} requests => ${(busy / requests).toFixed(1)} us busy per request` : ''}\n\n`);
process.stdout.write(`| ${inclusive ? 'total' : 'self'} % of busy | ${requests ? 'us/req | ' : ''}frame |\n|---:|${requests ? '---:|' : ''}---|\n`);
for (const [key, us] of rows) {
  if (key.startsWith('(idle)')) continue;
  process.stdout.write(`| ${((us / busy) * 100).toFixed(1)} | ${requests ? `${(us / requests).toFixed(2)} | ` : ''}${key.replace(/\|/g, '\\|')} |\n`);
}

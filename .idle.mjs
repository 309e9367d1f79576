import fs from 'node:fs';
for (const m of process.argv.slice(2)) await import(m.startsWith('/') || m.startsWith('.') ? new URL(m, 'file://' + process.cwd() + '/').href : m);
setTimeout(() => {
  const r = Object.fromEntries(fs.readFileSync('/proc/self/smaps_rollup','utf8').split('\n').slice(1).filter(Boolean).map(l => { const [k, v] = l.split(/:\s+/); return [k, parseInt(v) / 1024]; }));
  console.log(`${r.Rss.toFixed(1)} anon ${r.Anonymous.toFixed(1)} shared ${r.Shared_Clean.toFixed(1)} heap ${(process.memoryUsage().heapUsed/1048576).toFixed(1)}  ${process.argv.slice(2).join(' ')}`);
}, 6000);

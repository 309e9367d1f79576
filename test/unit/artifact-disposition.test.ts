/** An artifact's download header: always an attachment, its name exact in filename* and safe in filename. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attachmentDisposition } from '../../src/core/index.js';

test('Content-Disposition of an artifact: attachment, the last path part, ASCII fallback and RFC 8187 exact name', () => {
  const cases: [string, string][] = [
    ['out.bin', `attachment; filename="out.bin"; filename*=UTF-8''out.bin`],
    ['dist/pkg/kiln-1.0.tgz', `attachment; filename="kiln-1.0.tgz"; filename*=UTF-8''kiln-1.0.tgz`],
    ['report "final".html', `attachment; filename="report _final_.html"; filename*=UTF-8''report%20%22final%22.html`],
    ['résumé.pdf', `attachment; filename="r_sum_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`],
    ['a\\b;c=d\'(e)*%.txt', `attachment; filename="a_b;c=d'(e)*_.txt"; filename*=UTF-8''a%5Cb%3Bc%3Dd%27%28e%29%2A%25.txt`],
    ['line\nbreak', `attachment; filename="line_break"; filename*=UTF-8''line%0Abreak`],
  ];
  for (const [path, expected] of cases) assert.equal(attachmentDisposition(path), expected, path);
});

// Builds the console into dist/ (not committed): the app's own files from src/ and the
// browser build of MQTT.js from node_modules (installed by `npm ci` from package-lock.json).
// No bundler: the browser loads ES modules; the console's server serves exactly these files.
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');
const vendor = join(dist, 'vendor');
const mqtt = join(here, 'node_modules', 'mqtt');

rmSync(dist, { recursive: true, force: true });
mkdirSync(vendor, { recursive: true });
const files = [];
for (const name of readdirSync(src).sort()) {
  if (!/^[a-z0-9-]+\.(html|js|css|svg)$/.test(name)) continue;
  copyFileSync(join(src, name), join(dist, name));
  files.push(name);
}
copyFileSync(join(mqtt, 'dist', 'mqtt.esm.js'), join(vendor, 'mqtt.esm.js'));
files.push('vendor/mqtt.esm.js');
const version = JSON.parse(readFileSync(join(mqtt, 'package.json'), 'utf8')).version;
const digest = createHash('sha256');
for (const name of files) digest.update(name).update(readFileSync(join(dist, name)));
writeFileSync(join(dist, 'build.json'), JSON.stringify({
  files, mqtt: version, sha256: digest.digest('hex'),
}, null, 2) + '\n');
console.log(`console built: ${files.length} files in ${dist} (MQTT.js ${version})`);

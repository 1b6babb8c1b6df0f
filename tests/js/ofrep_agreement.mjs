// Evaluates flags for many subjects through OpenFeature's JavaScript server SDK and its OFREP
// provider, as a Node application would, and prints what each evaluation returned.
// Usage: node ofrep_agreement.mjs BASE_URL API_KEY REQUESTS_FILE > answers.json
// REQUESTS_FILE: {"flags": [...], "subjects": [...]}; the answer lists, per flag, each subject's
// [value, reason] in order.
import { readFileSync } from 'node:fs';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const [baseUrl, apiKey, requestsFile] = process.argv.slice(2);
const { flags, subjects } = JSON.parse(readFileSync(requestsFile, 'utf8'));
await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl, headers: [['Authorization', `Bearer ${apiKey}`]] }));
const client = OpenFeature.getClient();

const CONCURRENCY = 32;  // requests in flight at once, as a busy bot would have
const answers = {};
for (const flag of flags) {
  const results = new Array(subjects.length);
  let next = 0;
  async function worker() {
    while (next < subjects.length) {
      const i = next++;
      const details = await client.getBooleanDetails(flag, false, { targetingKey: subjects[i] });
      results[i] = [details.value, details.reason, details.errorCode ?? null];
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  answers[flag] = results;
}
process.stdout.write(JSON.stringify(answers));
await OpenFeature.close();

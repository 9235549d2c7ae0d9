// Sends events with the real @amplitude/analytics-node, pointed at Pulse.
// Usage: node amplitude.mjs SERVER_URL API_KEY N BASE_MS
// Event i: i%3 == 0 a track with user_id and device_id, 1 a track with a
// device_id only, 2 an identify ($set plan, $setOnce first_seen); its
// insert_id is amp-node-i, its time BASE_MS + i minutes.
import * as amplitude from '@amplitude/analytics-node'

const [serverUrl, apiKey, n, base] = process.argv.slice(2)
await amplitude.init(apiKey, { serverUrl, flushQueueSize: 1000, flushIntervalMillis: 600000, logLevel: amplitude.Types.LogLevel.Warn }).promise
const sent = []
for (let i = 0; i < Number(n); i++) {
  const options = { device_id: `amp-device-${i}`, insert_id: `amp-node-${i}`, time: Number(base) + i * 60000 }
  if (i % 3 !== 1) options.user_id = `amp-user-${i % 5}`
  if (i % 3 === 2) {
    const id = new amplitude.Identify()
    id.set('plan', 'pro')
    id.setOnce('first_seen', '2026-01-01')
    sent.push(amplitude.identify(id, options).promise)
  } else {
    sent.push(amplitude.track('Order Completed', { revenue: i, order_id: `o-${i}` }, options).promise)
  }
}
await amplitude.flush().promise
for (const r of await Promise.all(sent)) {
  if (r.code !== 200) { console.error('amplitude answered', r.code, r.message); process.exitCode = 1 }
}
console.log(JSON.stringify(sent.length))
// The client keeps a keep-alive socket and timers: nothing is left to send.
process.exit(process.exitCode ?? 0)

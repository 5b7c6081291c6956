// A fast merchant callback receiver on 127.0.0.1: answers every POST 200 (without checking
// the signature) and `GET /stats` with how many it received.  PORT=… node receiver.js
let received = 0;
require('http').createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') return res.end(String(received));
  req.on('data', () => {});
  req.on('end', () => { received++; res.writeHead(200, { 'content-length': '0' }); res.end(); });
}).listen(Number(process.env.PORT || 5391), '127.0.0.1');

# Throughput of each target relative to nginx proxy_pass in the same run,
# JSON and SSE side by side, from bench/run.sh's latest.dat:
#   gnuplot -e "dat='bench/results/latest.dat'; out='x.svg'" bench/plot.gp
set terminal svg size 720,400 font "sans,12" background "#ffffff" noenhanced
set output out
set title "Requests per second, relative to nginx proxy_pass (1.0)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:*]
set grid ytics
set ylabel "x proxy_pass"
set key top left
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb "#555555"
set arrow from graph 0, first 0.8 to graph 1, first 0.8 nohead dt 3 lc rgb "#aa3333"
set label "0.8: the miss path's target" at graph 0.27, first 0.73 tc rgb "#aa3333"
plot dat using 2:xtic(1) title "JSON" lc rgb "#4477aa", \
     '' using 3 title "SSE" lc rgb "#ee7733"

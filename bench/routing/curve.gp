# The learned router's quality/cost curve on the test split:
#   gnuplot -e "data='build/route-curve.tsv'; out='x.svg'; q=7" bench/routing/curve.gp
# Each point is one max_quality_loss (0% to 30%), its threshold picked on
# the validation split; q marks one of them (the configured one).
set terminal svg size 760,460 dynamic font "sans,12" background rgb "white"
set output out
set title "Learned router, test split: saving captured against quality lost"
set xlabel "needs-strong prompts sent to Mixtral-8x7B (%)"
set ylabel "share (%)"
if (!exists("q")) q = 7
set key top left noenhanced box opaque
set grid
set xrange [0:*]
set yrange [0:100]
set datafile separator "\t"
plot data using 3:5 with linespoints pt 7 ps 0.6 lw 2 title "achievable saving captured (by cost)", \
     data using 3:4 with linespoints pt 5 ps 0.5 lw 2 title "cheap-is-fine prompts sent to 8x22B", \
     data using 3:(($1==q)?$5:1/0) with points pt 6 ps 2 lw 2 lc rgb "black" title sprintf("max_quality_loss=%d%%", q), \
     data using 3:(($1==q)?$4:1/0) with points pt 6 ps 2 lw 2 lc rgb "black" notitle
